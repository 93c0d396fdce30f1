"""The inert builtins: safe to the scanner (one allowlist, pickle_scan.INERT_BUILTINS), and mapped by
the restricted reader to checked stand-ins that never expand memory on a file's say-so."""
import pytest

from tests.workers.modelfiles import hostile
from tests.workers.modelfiles.hostile import call, glob, i, pickle_of, s
from workers.modelfiles.pickle_scan import INERT_BUILTINS, SAFE_GLOBALS, classify_global, scan_path, scan_pickle_bytes
from workers.modelfiles.restricted_pickle import STAND_INS, InertBuiltin, load_restricted
from workers.modelfiles.torch_reader import iter_torch_tensors
from workers.modelfiles.types import ModelFileError

ALLOWED = ["dict", "list", "tuple", "set", "frozenset", "len", "int", "float", "complex", "bool",
           "str", "bytes", "slice", "range"]
NOT_ALLOWED = ["getattr", "eval", "exec", "__import__", "open", "compile", "globals", "vars", "setattr",
               "delattr", "input", "breakpoint", "type", "object", "print", "memoryview", "super", "map"]


def long1(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def builtin(name: str, *args: bytes, module: str = "builtins") -> bytes:
    return call(glob(module, name), *args)


def load(body: bytes, protocol: int = 2):
    return load_restricted(pickle_of(body, protocol=protocol))[0]


@pytest.mark.parametrize("name", ALLOWED)
def test_inert_builtins_are_safe(name):
    assert classify_global("builtins", name)[0] == "safe"
    assert scan_pickle_bytes(pickle_of(glob("builtins", name), protocol=3), where="b") == []


@pytest.mark.parametrize("name", ALLOWED)
def test_python2_spelling_is_safe_at_protocol_2(name):
    assert scan_pickle_bytes(pickle_of(glob("__builtin__", name), protocol=2), where="b") == []


@pytest.mark.parametrize("name", NOT_ALLOWED)
def test_every_other_builtin_stays_dangerous(name):
    assert classify_global("builtins", name)[0] == "dangerous"
    findings = scan_pickle_bytes(pickle_of(glob("__builtin__", name), protocol=2), where="b")
    assert [f.severity for f in findings] == ["dangerous"]


def test_python2_names_are_mapped_before_the_allowlist_decides():
    assert scan_pickle_bytes(pickle_of(glob("__builtin__", "xrange"), protocol=2), where="b") == []
    reduce_ = scan_pickle_bytes(pickle_of(glob("__builtin__", "reduce"), protocol=2), where="b")
    assert [f.what for f in reduce_] == ["functools.reduce"]
    # fix_imports only applies below protocol 3: there `__builtin__` is not builtins
    assert scan_pickle_bytes(pickle_of(glob("__builtin__", "dict"), protocol=3), where="b")[0].severity == "dangerous"


def test_the_allowlist_lives_in_one_place_and_the_reader_has_a_stand_in_for_each():
    assert set(ALLOWED) <= INERT_BUILTINS
    assert {f"builtins.{n}" for n in INERT_BUILTINS} <= SAFE_GLOBALS
    assert set(STAND_INS) == SAFE_GLOBALS
    assert all(isinstance(STAND_INS[f"builtins.{n}"], InertBuiltin) for n in INERT_BUILTINS)


def test_a_builtin_as_a_value_is_an_inert_stand_in_not_the_real_type():
    value = load(b"}" + s("type") + glob("builtins", "int") + b"s")  # argparse's type=int in hparams
    assert value == {"type": InertBuiltin("int")}
    assert value["type"] is not int


@pytest.mark.parametrize("body, expected", [
    (builtin("int", s("42")), 42),
    (builtin("float", s("2.5")), 2.5),
    (builtin("complex", b"G?\xf0\x00\x00\x00\x00\x00\x00", b"G@\x00\x00\x00\x00\x00\x00\x00"), complex(1, 2)),
    (builtin("bool", i(1)), True),
    (builtin("str", hostile.b(b"abc"), s("utf-8")), "abc"),
    (builtin("bytes", i(3)), b"\x00\x00\x00"),
    (builtin("bytearray", hostile.lst(i(1), i(2))), bytearray(b"\x01\x02")),
    (builtin("list", builtin("range", i(4))), [0, 1, 2, 3]),
    (builtin("tuple", hostile.lst(i(1))), (1,)),
    (builtin("set", hostile.lst(i(1), i(1))), {1}),
    (builtin("frozenset", hostile.lst(i(2))), frozenset({2})),
    (builtin("dict", hostile.lst(hostile.tup(s("a"), i(1)))), {"a": 1}),
    (builtin("len", hostile.lst(i(1), i(2))), 2),
    (builtin("slice", i(1), i(5), b"N"), slice(1, 5, None)),
    (builtin("range", i(0), i(10), i(2)), range(0, 10, 2)),
    (builtin("xrange", i(3), module="__builtin__"), range(3)),
])
def test_inert_builtins_build_plain_values(body, expected):
    assert load(body) == expected


@pytest.mark.parametrize("body, words", [
    (builtin("list", builtin("range", long1(10**18))), "range of 1000000000000000000 items is not expanded"),
    (builtin("set", builtin("range", long1(10**18))), "not expanded"),
    (builtin("tuple", builtin("range", long1(10**18))), "not expanded"),
    (builtin("len", builtin("range", long1(10**30))), "range"),
    (builtin("bytes", long1(10**12)), r"bytes\(1000000000000\) is not allocated"),
    (builtin("bytearray", long1(10**12)), r"bytearray\(1000000000000\) is not allocated"),
    (builtin("bytes", builtin("range", long1(10**12))), "not expanded"),
    (builtin("int", s("9" * 5000)), "5000-character string is not parsed"),
    (builtin("str", hostile.b(b"x\x9c"), s("zlib_codec")), "encoding 'zlib_codec' is not used"),
    (builtin("str", hostile.lst(i(1))), "builtins.str of list is not made"),
    (builtin("list", glob("collections", "OrderedDict")), "not read"),
])
def test_inert_builtins_refuse_what_would_expand_memory(body, words):
    with pytest.raises(ModelFileError, match=words):
        load(body)


def test_an_exponential_repr_is_refused_not_built():
    # a list that doubles 60 times through the memo, then str() of it: 2**60 reprs
    body = b"]q\x000"
    for n in range(60):
        body += b"(h" + bytes([n]) + b"h" + bytes([n]) + b"lq" + bytes([n + 1]) + b"0"
    with pytest.raises(ModelFileError, match="str of list"):
        load(b"c__builtin__\nstr\n" + body + b"h\x3c\x85R")


def _zip_with(tmp_path, extra: bytes):
    storage = hostile.tup(s("storage"), glob("torch", "FloatStorage"), s("0"), s("cpu"), i(4)) + b"Q"
    tensor = call(glob("torch._utils", "_rebuild_tensor_v2"), storage, i(0), hostile.tup(i(4)), hostile.tup(i(1)),
                  b"\x89", call(glob("collections", "OrderedDict")))
    data_pkl = pickle_of(b"}" + s("w") + tensor + b"s" + s("hparams") + extra + b"s")
    return hostile.torch_zip(tmp_path / "m.pt", hostile.benign_zip_entries(data_pkl))


def test_a_checkpoint_with_builtins_in_its_hyper_parameters_is_safe_and_read(tmp_path):
    hparams = b"}" + s("type") + glob("builtins", "int") + b"s" + s("steps") + builtin("range", i(10)) + b"s"
    path = _zip_with(tmp_path, hparams)
    assert scan_path(path).verdict == "safe"
    assert [t.name for t in iter_torch_tensors(path)] == ["w"]


def test_a_checkpoint_asking_for_a_huge_expansion_is_refused_in_words_not_with_memory_error(tmp_path):
    path = _zip_with(tmp_path, builtin("list", builtin("range", long1(10**18))))
    assert scan_path(path).verdict == "safe"  # no code runs: only memory is at stake, and the reader caps it
    with pytest.raises(ModelFileError, match="not expanded"):
        list(iter_torch_tensors(path))
