"""Values every layer passes: audio, fragments, results, stage requests, stage specs; imports only errors."""
