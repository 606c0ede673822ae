#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.dirname(here))  # common_settings
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings_events_emitter")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
