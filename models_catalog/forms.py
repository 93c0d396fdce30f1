"""Forms of the web pages: they validate what people type; services do the work."""
from __future__ import annotations

import re

from django import forms

from models_catalog.jinja_env import FormRenderer
from models_catalog.models import LocalFile, Match, Source
from models_catalog.selectors import (
    FILE_MATCH_KINDS, FILE_SCOPES, FILE_SORTS, FILE_STATES, LOCAL_FORMATS, SORTS, VERDICTS, FileQuery,
)

from workers.modelfiles.architecture import FAMILIES, KINDS

REPO_TYPES = (("model", "model"), ("dataset", "dataset"), ("space", "space"))
# The Hub's rule: one optional namespace, then a name of letters, digits, '-', '_' and '.'.
REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")
KEEP_CHOICES = (("lossless", "the highest precision (loses nothing)"), ("fp32", "fp32 copies"), ("bf16", "bf16 copies"),
                ("fp16", "fp16 copies"), ("fp8", "fp8 copies (the lossiest)"))


def _blank(choices) -> list[tuple[str, str]]:
    return [("", "any")] + list(choices)


# This app's forms draw their widgets with Django's Jinja2 copies of its widget templates (jinja_env.FormRenderer):
# the Django-template renderer renders a template per <option>, 9 ms of the My files page's filter form.
# Not site-wide (FORM_RENDERER): the admin's widgets exist only as Django templates.
RENDERER = FormRenderer()


class Form(forms.Form):
    default_renderer = RENDERER


class CatalogFilterForm(Form):
    q = forms.CharField(required=False, max_length=64 * 1024, label="Search",
                        widget=forms.TextInput(attrs={"type": "search",
                                                      "placeholder": "name, trigger word or any hash"}))
    scope = forms.ChoiceField(required=False, choices=(("mine", "identified in my files"), ("all", "all known models")))
    type = forms.CharField(required=False, max_length=64)
    base_model = forms.CharField(required=False, max_length=100, label="Base model")
    source = forms.ChoiceField(required=False, choices=_blank(Source.choices))
    format = forms.ChoiceField(required=False, choices=_blank((f, f) for f in LOCAL_FORMATS), label="Format (my copy)")
    safety = forms.ChoiceField(required=False, choices=_blank((v, v) for v in VERDICTS), label="Safety (my copy)")
    kind = forms.ChoiceField(required=False, choices=_blank(Match.Kind.choices), label="Match kind")
    sort = forms.ChoiceField(required=False, choices=list(SORTS.items()))
    after = forms.CharField(required=False, max_length=2000, widget=forms.HiddenInput)

    def cleaned_or_defaults(self) -> dict:
        self.is_valid()  # a bad value drops only its own filter: cleaned_data keeps the valid ones
        data = self.cleaned_data
        out = {name: (data.get(name) or "") for name in self.fields}
        out["q"] = out["q"].strip()
        out["scope"] = out["scope"] or "mine"
        out["sort"] = out["sort"] or "name"
        return out


class FileFilterForm(Form):
    """My files: the same parameters as GET /api/v1/files/ (serializers.FileListParamsSerializer)."""

    search = forms.CharField(required=False, max_length=64 * 1024, label="Search",
                             widget=forms.TextInput(attrs={"type": "search", "autocapitalize": "off", "spellcheck": "false",
                                                           "placeholder": "name, folder, model or any hash"}))
    type = forms.CharField(required=False, max_length=64)
    base_model = forms.CharField(required=False, max_length=100, label="Base model")
    safety = forms.ChoiceField(required=False, choices=_blank((v, v) for v in VERDICTS))
    match = forms.ChoiceField(required=False, choices=_blank(FILE_MATCH_KINDS), label="Match")
    state = forms.ChoiceField(required=False, choices=_blank(FILE_STATES.items()), label="Identified?")
    folder = forms.CharField(required=False, max_length=4096, widget=forms.TextInput(attrs={"autocapitalize": "off"}))
    status = forms.ChoiceField(required=False, choices=_blank(LocalFile.Status.choices))
    origin = forms.ChoiceField(required=False, choices=_blank(LocalFile.Origin.choices))
    format = forms.ChoiceField(required=False, choices=_blank((f, f) for f in LOCAL_FORMATS))
    family = forms.ChoiceField(required=False, choices=_blank((f, f) for f in FAMILIES), label="Family (tensors)")
    kind = forms.ChoiceField(required=False, choices=_blank(KINDS.items()), label="Kind (tensors)")
    updates = forms.ChoiceField(required=False, choices=_blank([("newer", "a newer version exists")]), label="Updates")
    sort = forms.ChoiceField(required=False, choices=list(FILE_SORTS.items()))
    scope = forms.ChoiceField(required=False, choices=list(FILE_SCOPES.items()), label="Whose")
    cursor = forms.CharField(required=False, max_length=2000, widget=forms.HiddenInput)

    def cleaned_or_defaults(self) -> dict:
        self.is_valid()  # a bad value drops only its own filter: cleaned_data keeps the valid ones
        out = {name: (self.cleaned_data.get(name) or "") for name in self.fields}
        out["search"] = out["search"].strip()
        out["sort"] = out["sort"] or FileQuery.sort
        out["scope"] = out["scope"] or FileQuery.scope
        return out


class LookupForm(Form):
    q = forms.CharField(max_length=64 * 1024, label="Hash or generation parameters",
                        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "autocapitalize": "off",
                                                     "placeholder": "B94D27B993, sha256:…, blake3:…, or paste an "
                                                                    "image's generation parameters"}))


class DuplicatesForm(Form):
    prefer = forms.ChoiceField(required=False, choices=KEEP_CHOICES, label="Keep")


class HFIndexForm(Form):
    repo_id = forms.CharField(max_length=200, label="Repository",
                              widget=forms.TextInput(attrs={"placeholder": "stabilityai/sdxl-vae", "autocapitalize": "off"}))
    revision = forms.CharField(required=False, max_length=255, label="Revision (branch, tag or commit; empty: main)")
    repo_type = forms.ChoiceField(choices=REPO_TYPES, initial="model", label="Type")

    def clean_repo_id(self) -> str:
        value = self.cleaned_data["repo_id"].strip().strip("/")
        for prefix in ("https://huggingface.co/", "http://huggingface.co/", "hf.co/"):
            if value.startswith(prefix):
                value = value[len(prefix):]
        if not REPO_ID.match(value) or ".." in value:
            raise forms.ValidationError("a Hub repository id looks like owner/name (letters, digits, '-', '_', '.')")
        return value

    def clean_revision(self) -> str:
        value = self.cleaned_data["revision"].strip()
        if value and (".." in value or any(ch.isspace() for ch in value)):
            raise forms.ValidationError("a revision is a branch, tag or commit name without spaces or '..'")
        return value


class HFVerifyForm(HFIndexForm):
    local_dir = forms.CharField(max_length=4096, label="Local folder (under your model roots)",
                                widget=forms.TextInput(attrs={"placeholder": "/data/models/sdxl-vae",
                                                              "autocapitalize": "off"}))


class RegisterPathForm(Form):
    path = forms.CharField(max_length=4096, label="File or folder on this server (under a model root)",
                           widget=forms.TextInput(attrs={"placeholder": "/data/models/loras", "autocapitalize": "off",
                                                         "autocomplete": "off", "spellcheck": "false"}))


class ApiTokenForm(Form):
    name = forms.CharField(required=False, max_length=100, label="What it is for (optional)",
                           widget=forms.TextInput(attrs={"placeholder": "push from the GPU box"}))


class ConvertForm(Form):
    """Convert to safetensors: the dtype (each with its resulting size), where, and whether a
    suspicious file may be converted. The page fills the labels from the plan."""

    dtype = forms.ChoiceField(choices=(("keep", "keep the dtypes"), ("fp16", "fp16"), ("bf16", "bf16")),
                              initial="keep", widget=forms.RadioSelect, label="Precision")
    out = forms.CharField(required=False, max_length=4096, label="Output file (under your model roots)",
                          widget=forms.TextInput(attrs={"autocapitalize": "off", "autocomplete": "off",
                                                        "spellcheck": "false"}))
    allow_suspicious = forms.BooleanField(required=False, label="Convert it although it is suspicious "
                                                                "(what lies outside the allowlist is dropped)")

    def __init__(self, *args, sizes: dict[str, int] | None = None, suspicious: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        from django.template.defaultfilters import filesizeformat

        if sizes:
            self.fields["dtype"].choices = [(value, f"{label} — {filesizeformat(sizes[value])}")
                                            for value, label in self.fields["dtype"].choices]
        self.suspicious = suspicious
        if not suspicious:
            del self.fields["allow_suspicious"]

    def clean(self):
        data = super().clean()
        if self.suspicious and not data.get("allow_suspicious"):
            self.add_error("allow_suspicious", "this file is suspicious: tick the box to convert it anyway")
        return data
