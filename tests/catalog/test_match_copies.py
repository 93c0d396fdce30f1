"""Match copies its file's owner and its source file's model (issue #14): every writer fills them, the
migration fills the rows made before it, and the searches that read them find what the joins found."""
import pytest
from django.contrib.auth import get_user_model

from models_catalog.models import Match
from models_catalog.selectors import CatalogQuery, FileQuery, catalog_queryset, file_list_queryset
from models_catalog.services.matching import local_file_match
from tests.factories import catalog_file, local_file, match, migrated_to, migrated_to_latest


@pytest.fixture
def owner(db):
    return get_user_model().objects.create_user("copies-owner", password="pw-123456")


def copies_agree():
    for m in Match.objects.select_related("local_file", "source_file__version"):
        assert (m.owner_id, m.model_id) == (m.local_file.owner_id, m.source_file.version.model_id)


def test_a_saved_and_a_matched_match_carry_the_owner_and_the_model(owner):
    sf = catalog_file("Toad Diffusion", data=b"toad")
    other = catalog_file("Frog Mix", data=b"frog")
    match(local_file(owner, "x.safetensors", data=b"nothing"), other)  # save()
    local_file(owner, "toad.safetensors", data=b"toad")
    lf = local_file(owner, "renamed.safetensors", data=b"toad")
    [made] = local_file_match(local_file_id=lf.pk)  # the matching pass: bulk_create
    assert (made.owner_id, made.model_id) == (owner.pk, sf.version.model_id)
    copies_agree()


def test_my_files_and_my_catalog_find_files_by_their_models_name(owner, django_user_model):
    sf = catalog_file("Toad Diffusion", data=b"toad")
    mine = local_file(owner, "model_001.safetensors", data=b"toad")
    match(mine, sf)
    stranger = django_user_model.objects.create_user("stranger", password="pw-123456")
    match(local_file(stranger, "theirs.safetensors", data=b"toad"), sf)
    found = file_list_queryset(FileQuery(user=owner, search="toad"))
    assert list(found.values_list("pk", flat=True)) == [mine.pk]
    assert not file_list_queryset(FileQuery(user=stranger, search="frog")).exists()
    assert list(catalog_queryset(CatalogQuery(user=owner, text="toad", scope="mine"))) == [sf.version.model]
    assert not catalog_queryset(CatalogQuery(user=owner, text="frog", scope="mine")).exists()


@pytest.mark.django_db(transaction=True)
def test_migration_0026_fills_the_copies_of_matches_made_before_it():
    before, after = ("models_catalog", "0025_duplicate_key_indexes"), ("models_catalog", "0026_match_owner_model")
    old = migrated_to(before)
    owner = old.get_model("auth", "User").objects.create(username="old")
    lf = old.get_model("models_catalog", "LocalFile").objects.create(owner=owner, origin="pushed", path="/m/o", name="o")
    model = old.get_model("models_catalog", "SourceModel").objects.create(source="civitai", external_id="1", name="M")
    version = old.get_model("models_catalog", "SourceVersion").objects.create(model=model, external_id="2")
    sf = old.get_model("models_catalog", "SourceFile").objects.create(version=version, external_id="3", name="a")
    old.get_model("models_catalog", "Match").objects.create(local_file=lf, source_file=sf, kind="exact", evidence="e")

    new = migrated_to(after)
    m = new.get_model("models_catalog", "Match").objects.get()
    assert (m.owner_id, m.model_id) == (owner.pk, model.pk)
    migrated_to_latest()
