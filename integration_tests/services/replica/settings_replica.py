from common_settings import *  # noqa: F401,F403
from common_settings import cqrs_settings

CQRS = cqrs_settings("replica")
