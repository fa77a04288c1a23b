"""Test support for the WhisperJAV drop-in: the stand-in ``whisperjav`` package (in this folder,
importable once the folder is on ``sys.path``) and the helpers in :mod:`.harness`."""
