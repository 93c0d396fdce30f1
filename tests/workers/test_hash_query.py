import hashlib
import zlib

import blake3
import pytest

from workers.hash_parse import KINDS, HashCandidate, HashQuery, HashQueryError, detect_kinds
from workers.hash_query import MAX_QUERY_CHARS, parse_hash_query

DATA = b"hello world"
SHA256 = hashlib.sha256(DATA).hexdigest()
AUTOV2 = SHA256[:10]
BLAKE3 = blake3.blake3(DATA).hexdigest()
# Civitai prints CRC32 little-endian: the bytes of zlib's integer, low byte first.
CRC32_CIVITAI = zlib.crc32(DATA).to_bytes(4, "little").hex()
AUTOV3 = hashlib.sha256(b"tensor bytes after the header").hexdigest()


def only(text):
    queries = parse_hash_query(text)
    assert len(queries) == 1, queries
    return queries[0]


def pairs(query):
    return [(c.kind, c.value) for c in query.candidates]


# --- detect_kinds -----------------------------------------------------------

@pytest.mark.parametrize("value, kinds", [
    (CRC32_CIVITAI, ("AutoV1", "CRC32")),
    (AUTOV2, ("AutoV2",)),
    (AUTOV3[:12], ("AutoV3", "SHA256_12")),
    (SHA256, ("SHA256", "BLAKE3", "AutoV3_full")),
    (SHA256.upper(), ("SHA256", "BLAKE3", "AutoV3_full")),
])
def test_detect_kinds_by_length(value, kinds):
    assert detect_kinds(value) == kinds


@pytest.mark.parametrize("value", ["", "abc", SHA256[:9], SHA256[:40], SHA256 + "0", "xyzxyzxy", "0x" + SHA256[:8], None, 12345678])
def test_detect_kinds_is_empty_for_non_hashes(value):
    assert detect_kinds(value) == ()


# --- bare hashes --------------------------------------------------------------

def test_ten_hex_is_autov2():
    q = only(AUTOV2)
    assert pairs(q) == [("AutoV2", AUTOV2)]
    assert q.kinds_tried == ("AutoV2",)
    assert q.label is None


def test_twelve_hex_tries_autov3_and_sha256_12_and_says_why():
    # Both kinds are 12 hex (workers/kinds.py): nothing in the value tells them apart, so both are tried.
    q = only(AUTOV3[:12].upper())
    assert pairs(q) == [("AutoV3", AUTOV3[:12]), ("SHA256_12", AUTOV3[:12])]
    assert "AutoV3" in q.note and "SHA256_12" in q.note and "All are tried" in q.note


def test_sha256_12_prefix_names_that_kind_only():
    assert pairs(only(f"sha256_12:{SHA256[:12].upper()}")) == [("SHA256_12", SHA256[:12])]


def test_eight_hex_tries_autov1_and_crc32_and_says_why():
    q = only(CRC32_CIVITAI.upper())
    assert pairs(q) == [("AutoV1", CRC32_CIVITAI), ("CRC32", CRC32_CIVITAI)]
    assert "AutoV1" in q.note and "CRC32" in q.note and "byte order" in q.note


def test_sixty_four_hex_tries_sha256_blake3_and_full_autov3():
    q = only(BLAKE3)
    assert q.kinds_tried == ("SHA256", "BLAKE3", "AutoV3_full")
    assert {c.value for c in q.candidates} == {BLAKE3}
    assert "sshs_model_hash" in q.note


@pytest.mark.parametrize("pasted", [
    f"  {SHA256.upper()}\n",
    f'"{SHA256}"',
    f"'{SHA256.upper()}'",
    f"`{SHA256}`",
    f"\u201c{SHA256}\u201d",
])
def test_whitespace_quotes_and_case_are_ignored(pasted):
    q = only(pasted)
    assert q.candidates[0] == HashCandidate("SHA256", SHA256)


def test_several_hashes_in_one_paste_keep_their_order():
    queries = parse_hash_query(f"{AUTOV2}, {CRC32_CIVITAI}\n sha256:{SHA256} ; {AUTOV3[:12]}")
    assert [q.kinds_tried for q in queries] == [
        ("AutoV2",), ("AutoV1", "CRC32"), ("SHA256",), ("AutoV3", "SHA256_12"),
    ]


@pytest.mark.parametrize("bad, detail", [
    ("abc", "got 3"),
    (SHA256[:9], "got 9"),
    (SHA256[:32], "MD5"),
    (SHA256[:40], "SHA-1"),
    (SHA256 + "ab", "got 66"),
    ("xyz", "'x'"),
    ("6ce016168g", "'g'"),
])
def test_wrong_length_or_non_hex_is_an_error_a_user_understands(bad, detail):
    with pytest.raises(HashQueryError) as err:
        parse_hash_query(bad)
    message = str(err.value)
    assert f"'{bad}' is not a hash" in message
    assert "expected 8, 10, 12 or 64 hex characters" in message
    assert detail in message


def test_one_bad_hash_among_good_ones_fails_naming_it():
    with pytest.raises(HashQueryError, match="'nothex!!'"):
        parse_hash_query(f"{AUTOV2} nothex!! {SHA256}")


@pytest.mark.parametrize("text", ["", "   ", '""', "\n\t"])
def test_empty_input_is_an_error(text):
    with pytest.raises(HashQueryError, match="nothing to look up"):
        parse_hash_query(text)


def test_non_text_and_huge_input_are_errors():
    with pytest.raises(HashQueryError):
        parse_hash_query(b"6ce0161689")
    with pytest.raises(HashQueryError, match="characters"):
        parse_hash_query("a" * (MAX_QUERY_CHARS + 1))


def test_hash_query_error_is_a_value_error():
    assert issubclass(HashQueryError, ValueError)


# --- prefixed hashes ------------------------------------------------------------

@pytest.mark.parametrize("prefix, value, kind", [
    ("sha256", SHA256, "SHA256"),
    ("SHA256", SHA256.upper(), "SHA256"),
    ("blake3", BLAKE3, "BLAKE3"),
    ("Blake3", BLAKE3.upper(), "BLAKE3"),
    ("autov1", CRC32_CIVITAI, "AutoV1"),
    ("AutoV2", AUTOV2, "AutoV2"),
    ("autov3", AUTOV3[:12], "AutoV3"),
    ("autov3", AUTOV3, "AutoV3_full"),
    ("autov3_full", AUTOV3, "AutoV3_full"),
    ("CRC32", CRC32_CIVITAI.upper(), "CRC32"),
])
def test_prefix_names_exactly_one_kind(prefix, value, kind):
    q = only(f"{prefix}:{value}")
    assert pairs(q) == [(kind, value.lower())]


def test_prefix_may_be_followed_by_a_space():
    assert pairs(only(f"sha256: {SHA256}")) == [("SHA256", SHA256)]


def test_invokeai_blake3_note_mentions_folders():
    assert "folder" in only(f"blake3:{BLAKE3}").note


@pytest.mark.parametrize("text, fragment", [
    (f"sha256:{SHA256[:10]}", "needs 64 hex characters, got 10"),
    (f"crc32:{SHA256[:10]}", "needs 8 hex characters, got 10"),
    (f"autov3:{SHA256[:10]}", "needs 12 or 64 hex characters"),
    ("blake3:not-hex", "expected hex characters"),
    ("blake3:", "expected hex characters"),
    (f"foo:{SHA256}", "unknown prefix 'foo'"),
    (f"md5:{SHA256[:32]}", "md5"),
    (f"sha1:{SHA256[:40]}", "sha1"),
])
def test_bad_prefixed_hashes_are_errors(text, fragment):
    with pytest.raises(HashQueryError) as err:
        parse_hash_query(text)
    assert fragment in str(err.value)


# --- dataclasses ------------------------------------------------------------------

def test_every_kind_has_a_valid_candidate_form():
    lengths = {"AutoV1": 8, "CRC32": 8, "AutoV2": 10, "AutoV3": 12, "SHA256_12": 12}
    for kind in KINDS:
        HashCandidate(kind, SHA256[: lengths.get(kind, 64)])


@pytest.mark.parametrize("kind, value", [
    ("MD5", SHA256[:32]), ("SHA256", SHA256.upper()), ("AutoV2", SHA256[:12]), ("CRC32", "zzzzzzzz"),
])
def test_candidate_rejects_impossible_values(kind, value):
    with pytest.raises(HashQueryError):
        HashCandidate(kind, value)


def test_queries_are_frozen():
    q = only(AUTOV2)
    with pytest.raises(AttributeError):
        q.note = "x"
    assert isinstance(q, HashQuery)


# --- A1111 / Forge infotext -----------------------------------------------------

MODEL_SHA = hashlib.sha256(b"checkpoint").hexdigest()
VAE_SHA = hashlib.sha256(b"vae").hexdigest()
LORA_ADDNET = hashlib.sha256(b"lora tensors").hexdigest()
LORA2_ADDNET = hashlib.sha256(b"detail tweaker tensors").hexdigest()
TI_SHA = hashlib.sha256(b"easynegative").hexdigest()

INFOTEXT = f"""masterpiece, best quality, 1girl, looking at viewer, (detailed eyes:1.2), <lora:add_detail:0.6>, <lora:aesthetic_v5:0.8>
Negative prompt: EasyNegative, (worst quality, low quality:1.4), bad hands
Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 3421986745, Size: 512x768, Model hash: {MODEL_SHA[:10]}, Model: dreamshaper_8, VAE hash: {VAE_SHA[:10]}, VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.45, Clip skip: 2, Hires upscale: 2, Hires upscaler: 4x-UltraSharp, Lora hashes: "add_detail: {LORA2_ADDNET[:12]}, aesthetic_v5: {LORA_ADDNET[:12]}", TI hashes: "EasyNegative: {TI_SHA[:12]}", Version: v1.7.0"""


def by_label(queries):
    return {q.label: q for q in queries}


def test_full_infotext_yields_model_vae_loras_and_embeddings():
    queries = parse_hash_query(INFOTEXT)
    found = by_label(queries)
    assert list(found) == ["model", "vae", "lora:add_detail", "lora:aesthetic_v5", "embed:EasyNegative"]
    assert pairs(found["model"]) == [("AutoV2", MODEL_SHA[:10])]
    assert "dreamshaper_8" in found["model"].note
    assert pairs(found["vae"]) == [("AutoV2", VAE_SHA[:10])]
    assert "vae-ft-mse-840000-ema-pruned.safetensors" in found["vae"].note
    assert found["model"].text == f"Model hash: {MODEL_SHA[:10]}"


def test_lora_hashes_try_autov3_then_the_sha256_prefix():
    lora = by_label(parse_hash_query(INFOTEXT))["lora:aesthetic_v5"]
    assert pairs(lora) == [("AutoV3", LORA_ADDNET[:12]), ("SHA256_12", LORA_ADDNET[:12])]


def test_ti_hashes_are_sha256_12():
    ti = by_label(parse_hash_query(INFOTEXT))["embed:EasyNegative"]
    assert pairs(ti) == [("SHA256_12", TI_SHA[:12])]


def test_forge_twelve_character_model_hash_tries_sha256_12():
    # Some Forge builds write SHA256[:12] as the model hash; AutoV3 has the same length and is tried too.
    q = only(f"Steps: 20, Size: 512x512, Model hash: {MODEL_SHA[:12]}, Model: dreamshaper_8")
    assert q.label == "model"
    assert pairs(q) == [("AutoV3", MODEL_SHA[:12]), ("SHA256_12", MODEL_SHA[:12])]
    assert "dreamshaper_8" in q.note and "SHA256_12" in q.note


def test_a_single_infotext_line_is_enough():
    q = only(f"Model hash: {MODEL_SHA[:10].upper()}")
    assert (q.label, pairs(q)) == ("model", [("AutoV2", MODEL_SHA[:10])])


def test_old_eight_character_model_hash_is_autov1_only():
    q = only("Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 7460a6fa")
    assert pairs(q) == [("AutoV1", "7460a6fa")]


def test_quoted_values_are_json_unquoted():
    text = f'Steps: 20, Lora hashes: "caf\\u00e9 style: {LORA_ADDNET[:12]}", Seed: 1'
    assert only(text).label == "lora:caf\u00e9 style"


def test_civitai_hashes_json_is_read_and_duplicates_collapse():
    text = (
        f"Steps: 20, Size: 512x512, Model hash: {MODEL_SHA[:10]}, Model: dreamshaper_8, "
        f'Hashes: {{"vae": "{VAE_SHA[:10]}", "LORA:add_detail": "{LORA2_ADDNET[:10]}", '
        f'"embed:EasyNegative": "{TI_SHA[:10]}", "model": "{MODEL_SHA[:10]}"}}, Version: v1.6.0'
    )
    found = by_label(parse_hash_query(text))
    assert sorted(found) == ["embed:EasyNegative", "lora:add_detail", "model", "vae"]
    assert len(parse_hash_query(text)) == 4  # "model" appears twice in the text
    assert pairs(found["lora:add_detail"]) == [("AutoV2", LORA2_ADDNET[:10])]


def test_refiner_with_bracketed_hash():
    text = f"Steps: 30, Refiner: sd_xl_refiner_1.0 [{MODEL_SHA[:10]}], Refiner switch at: 0.8"
    q = only(text)
    assert (q.label, pairs(q)) == ("refiner", [("AutoV2", MODEL_SHA[:10])])
    assert "sd_xl_refiner_1.0" in q.note


@pytest.mark.parametrize("text, fragment", [
    ('Steps: 20, Lora hashes: "add_detail: nothex!!"', "Lora hashes"),
    ('Steps: 20, Lora hashes: "add_detail"', "not 'name: hash'"),
    ("Steps: 20, Model hash: 12345", "got 5"),
    ('Steps: 20, Hashes: {"model": "6ce01616', "not valid JSON"),
    ('Steps: 20, Hashes: {"model": 6}', "not a hash string"),
    ('Steps: 20, Hashes: {"model": "zz"}', "not a hash"),
    ("Steps: 20, Hashes: {}", "name no model hash"),
    ('Steps: 20, Lora hashes: ""', "name no model hash"),
])
def test_broken_infotext_is_an_error(text, fragment):
    with pytest.raises(HashQueryError) as err:
        parse_hash_query(text)
    assert fragment in str(err.value)
