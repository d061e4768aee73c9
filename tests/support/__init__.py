"""Helpers shared by the tests: real backends read back, user-written trackers, scripts run as subprocesses."""
