"""`python -m scheduler`: the same as the `scheduler` command."""

from scheduler.cli.main import main

if __name__ == "__main__":
    main()
