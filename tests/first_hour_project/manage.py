#!/usr/bin/env python
"""manage.py of the first-hour project (tests/unit/test_first_hour.py runs it in subprocesses)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fh_settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
