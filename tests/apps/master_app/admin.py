from django.contrib import admin

from dj_cqrs.admin import CQRSAdminMasterSyncMixin
from tests.apps.master_app.models import SimplestModel


@admin.register(SimplestModel)
class SimplestModelAdmin(CQRSAdminMasterSyncMixin, admin.ModelAdmin):
    pass
