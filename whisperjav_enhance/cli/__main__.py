"""``python -m whisperjav_enhance.cli``: the same as the ``whisperjav-enhance`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
