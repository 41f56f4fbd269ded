"""Data for the reference trainer: `tst prepare` (documents -> tokenizer + sharded token files with a
document index) and the loaders that read a prepared data folder.

    from tst_train.data.prepare import prepare            # the API behind `tst prepare`
    from tst_train.data import load_tokenizer, check_data_dir, TokenLoader, val_batches

Modules: ``sources`` (input readers), ``tokenizer``, ``plan`` / ``shards`` / ``prepare`` (the
preparation stages), ``layout`` (the data folder format, `TokenStream`), ``loader`` (`TokenLoader`,
`val_batches`; imports torch). (`tst_train.data.prepare` is the submodule; the function is
`tst_train.data.prepare.prepare`.) The names below are imported on first use, so that `tst prepare`
never imports torch (~185 MiB and over a second of start-up it does not need).
"""
import importlib

_EXPORTS = {
    "TokenLoader": "loader", "ValBatches": "loader", "check_vocab": "loader", "val_batches": "loader",
    "TokenStream": "layout", "check_data_dir": "layout", "load_split": "layout", "read_meta": "layout",
    "read_documents": "sources", "Tokenizer": "tokenizer", "load_tokenizer": "tokenizer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"tst_train.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'tst_train.data' has no attribute {name!r}")
