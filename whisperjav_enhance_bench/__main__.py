"""``python -m whisperjav_enhance_bench``: the benchmark without the product's CLI."""

import sys

if __name__ == "__main__":
    from whisperjav_enhance_bench.command import main

    sys.exit(main())
