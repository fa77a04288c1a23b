"""Which release line this stand-in imitates (``WHISPERJAV_STUB_LINE``, read once at import)."""

import os

LINE = os.environ.get("WHISPERJAV_STUB_LINE", "1.9").strip() or "1.9"
if LINE not in ("1.8", "1.9"):
    raise ImportError(f"WHISPERJAV_STUB_LINE must be 1.8 or 1.9, not {LINE!r}")
AT_LEAST_1_9 = LINE == "1.9"
