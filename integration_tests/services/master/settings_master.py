from common_settings import *  # noqa: F401,F403
from common_settings import cqrs_settings

CQRS = cqrs_settings("master")

if TRIGGERS:  # noqa: F405
    INSTALLED_APPS = [*INSTALLED_APPS[:2], "pgtrigger", *INSTALLED_APPS[2:], "gadgets"]  # noqa: F405
