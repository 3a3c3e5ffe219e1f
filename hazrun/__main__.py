"""``python -m hazrun`` is the ``hazrun`` command."""
from .cli import main

if __name__ == "__main__":
    main()
