from rest_framework import serializers

from tests.apps.master_app.models import Author, Book, Publisher


class PublisherSerializer(serializers.ModelSerializer):
    class Meta:
        model = Publisher
        fields = ["id", "name"]


class BookSerializer(serializers.ModelSerializer):
    class Meta:
        model = Book
        fields = ["id", "title"]


class AuthorSerializer(serializers.ModelSerializer):
    publisher = PublisherSerializer(allow_null=True)
    books = BookSerializer(many=True)

    class Meta:
        model = Author
        fields = ["id", "name", "publisher", "books"]
