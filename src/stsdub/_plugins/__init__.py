"""The plugin machinery: the stage registry, the built-in stage specs, the default-stage rule, -O options."""
