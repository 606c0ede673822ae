"""A view of the master service behind AuditMiddleware (IT_AUDIT=1, dj_cqrs only)."""

from catalog.models import Note
from django.http import HttpResponse
from django.urls import path


def save_note(request):
    note = Note.objects.filter(id=int(request.POST["id"])).first() or Note(
        id=int(request.POST["id"])
    )
    note.text = request.POST["text"]
    note.save()
    return HttpResponse(str(note.pk))


urlpatterns = [path("audit/note/", save_note)]
