"""Scenarios of the differential suite: every ``check_*`` function of a module here is one."""
