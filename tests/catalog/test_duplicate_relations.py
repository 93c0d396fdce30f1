"""The relation rules on hand-made copies (pure: no database)."""
from models_catalog.duplicate_relations import Copy, duplicate_groups_of


def copy(id, name, *, fmt="safetensors", precision="fp32", sha="", v3="", content="c", prec_id="p", size=100, **kw):
    return Copy(id=id, owner_id=1, name=name, path=f"/m/{name}", format=fmt, precision=precision, size=size,
                sha256=sha or f"{id:064x}", autov3=v3, content_id=content, precision_id=prec_id, **kw)


def relations(group):
    return {m.name: m.match for m in group.members}


def test_same_tensors_in_the_same_container_with_another_header_are_same_weights():
    [g] = duplicate_groups_of([copy(1, "a.safetensors", v3="v"), copy(2, "a-retagged.safetensors", v3="v")])
    assert relations(g) == {"a.safetensors": "keep", "a-retagged.safetensors": "same weights"}
    assert "AutoV3 equal" in g.members[1].evidence and g.lossless_bytes == 100 and g.lossy_bytes == 0


def test_copies_of_a_precision_variant_are_exact_copies_of_that_variant_not_of_the_keeper():
    group = [copy(1, "full.safetensors"),
             copy(2, "half.safetensors", precision="fp16", sha="h" * 64, content="c16", size=50),
             copy(3, "half-copy.safetensors", precision="fp16", sha="h" * 64, content="c16", size=50),
             copy(4, "half-link.safetensors", precision="fp16", sha="h" * 64, content="c16", size=50, device=1, inode=7),
             copy(5, "half-link-2.safetensors", precision="fp16", sha="h" * 64, content="c16", size=50, device=1, inode=7)]
    [g] = duplicate_groups_of(group)
    assert relations(g) == {"full.safetensors": "keep", "half.safetensors": "precision variant",
                            "half-copy.safetensors": "exact copy", "half-link.safetensors": "exact copy",
                            "half-link-2.safetensors": "same file"}
    assert [m.copy_set for m in g.members] == [1, 2, 2, 2, 2]
    assert "half.safetensors" in g.members[2].evidence  # names the member whose bytes it holds
    assert (g.lossless_bytes, g.lossy_bytes) == (100, 50)  # two copies of the fp16 bytes; the link frees nothing


def test_container_then_verification_then_source_name_then_age_decide_among_equal_precision():
    ckpt = copy(1, "a.ckpt", fmt="torch-zip", sha="s" * 64, created=1.0)
    old = copy(2, "old.safetensors", sha="t" * 64, created=2.0)
    verified = copy(3, "renamed.safetensors", sha="t" * 64, created=3.0, verified=True)
    named = copy(4, "source-name.safetensors", sha="t" * 64, created=4.0, verified=True, source_name=True)
    assert duplicate_groups_of([ckpt, old])[0].keep_id == old.id
    assert duplicate_groups_of([ckpt, old, verified])[0].keep_id == verified.id
    assert duplicate_groups_of([ckpt, old, verified, named])[0].keep_id == named.id


def test_a_hard_link_elsewhere_is_not_the_same_file_on_another_host():
    a = copy(1, "a.safetensors", sha="s" * 64, device=1, inode=7)
    b = copy(2, "b.safetensors", sha="s" * 64, device=1, inode=7, host="other-pc")
    [g] = duplicate_groups_of([a, b])
    assert relations(g)["b.safetensors"] == "exact copy"


def test_a_groups_json_is_its_dataclass_as_plain_values_and_shares_nothing_with_it():
    """to_json is built by hand (asdict's deep copy was a third of a cached API request): it must stay what
    asdict gives, and changing the JSON must not change the group (a cached page reuses it)."""
    from dataclasses import asdict

    [g] = duplicate_groups_of([copy(1, "full.safetensors"),
                               copy(2, "half.safetensors", precision="fp16", sha="h" * 64, content="c16", size=50)])
    assert g.evidence and len(g.members) == 2
    shown = g.to_json()
    assert shown == asdict(g)
    shown["members"][0]["name"] = "changed"
    shown["evidence"].append("changed")
    assert g.members[0].name == "full.safetensors" and "changed" not in g.evidence
