"""Every benign tensor shape the torch-reader and converter tests save: dtypes torch has (bf16, fp8,
unsigned), views (transposed, sliced, expanded), a storage shared by two entries, a scalar, an empty tensor."""
import torch


def benign_tensors() -> dict:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {"f32": torch.randn(3, 5), "f16": torch.randn(4).half(), "bf16": torch.randn(2, 3).bfloat16(),
            "f64": torch.randn(2).double(), "i64": torch.arange(-3, 3), "i32": torch.tensor([1, -2], dtype=torch.int32),
            "i16": torch.tensor([7], dtype=torch.int16), "i8": torch.tensor([-8], dtype=torch.int8),
            "u8": torch.tensor([200], dtype=torch.uint8), "bool": torch.tensor([True, False, True]),
            "f8": torch.randn(4).to(torch.float8_e4m3fn), "u16": torch.tensor([65535], dtype=torch.uint16),
            "transposed": base.t(), "sliced": base[1:3, ::2], "shared": base, "scalar": torch.tensor(3.5),
            "empty": torch.zeros(0, 3), "expanded": torch.ones(3, 1).expand(3, 4)}
