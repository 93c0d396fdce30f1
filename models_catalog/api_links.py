"""POST / DELETE /api/v1/files/{id}/link/: the owner links a file to a Civitai version or a Hugging Face
file by hand (services/manual_link.py). Only the owner: another user's file is a 404, staff included,
because the link is a statement about one's own file."""
from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from models_catalog.api import errors
from models_catalog.api_errors import ApiError
from models_catalog.identity import file_identities
from models_catalog.models import LocalFile
from models_catalog.serializers import FileIdentitySerializer
from models_catalog.services.manual_link import LinkRefused, local_file_link, local_file_unlink


class LinkRequestSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=1000, help_text="https://civitai.com/models/123?modelVersionId=456 (or "
                                "civitai.red), or https://huggingface.co/org/repo/blob/main/file.safetensors")


class LinkResultSerializer(serializers.Serializer):
    message = serializers.CharField(help_text='e.g. "linked to Ink Wash v1.0", or why only the URL was stored')
    url_only = serializers.BooleanField(help_text="true when Civitai could not be reached: only the URL is stored")
    identity = FileIdentitySerializer()


class UnlinkResultSerializer(serializers.Serializer):
    removed = serializers.IntegerField(help_text="manual links removed (0 or 1)")


class LocalFileLinkView(APIView):
    def _own_file(self, request, pk: int) -> LocalFile:
        return get_object_or_404(LocalFile.objects.filter(owner=request.user), pk=pk)

    @extend_schema(request=LinkRequestSerializer, responses={201: LinkResultSerializer, **errors(400, 401, 403, 404)},
                   description="Link your file by hand (a `manual` match, shown as \"linked by you\", never as "
                               "byte-exact and never to other users). Linking again replaces the link. Civitai is "
                               "asked for the version's details; when it is unreachable the URL alone is stored.")
    def post(self, request, pk: int):
        lf = self._own_file(request, pk)
        body = LinkRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            outcome = local_file_link(local_file=lf, url=body.validated_data["url"])
        except LinkRefused as exc:
            raise ApiError(str(exc), code="bad_link") from None
        identity = file_identities([lf], viewer=request.user)[lf.pk]
        return Response({"message": outcome.message, "url_only": outcome.url_only, "identity": identity.to_json()},
                        status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: UnlinkResultSerializer, **errors(401, 403, 404)},
                   description="Remove your manual link (the file's other matches stay).")
    def delete(self, request, pk: int):
        return Response({"removed": local_file_unlink(local_file=self._own_file(request, pk))})
