"""``python -m gan_inversion_bench`` is the ``gib`` command."""
from .cli import main

if __name__ == "__main__":
    main()
