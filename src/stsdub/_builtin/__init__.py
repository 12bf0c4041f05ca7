"""The built-in backends, one module each; each imports its library when the stage is built."""
