"""`python -m scheduler.runner`: start one runner process."""

from scheduler.runner.service import main

if __name__ == "__main__":
    main()
