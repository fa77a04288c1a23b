"""WhisperJAV's modules (only speech_enhancement exists in this stand-in)."""
