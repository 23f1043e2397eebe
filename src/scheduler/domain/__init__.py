"""The rules of the service, pure and clock-free: jobs and runs, schedules, policies, webhook signing."""
