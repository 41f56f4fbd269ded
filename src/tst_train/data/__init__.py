"""Data for the reference trainer: `tst prepare` (documents -> tokenizer + token files) and the
loaders that read a prepared data folder.

    from tst_train.data.prepare import prepare, main      # the API and `tst prepare`
    from tst_train.data import load_tokenizer, check_data_dir, TokenLoader, val_batches

(`tst_train.data.prepare` is the submodule; the function is `tst_train.data.prepare.prepare`.)
"""
from tst_train.data.loader import (
    TokenLoader,
    ValBatches,
    check_data_dir,
    check_vocab,
    load_split,
    read_meta,
    val_batches,
)
from tst_train.data.prepare import Tokenizer, load_tokenizer
from tst_train.data.sources import read_documents

__all__ = [
    "TokenLoader", "ValBatches", "check_data_dir", "check_vocab", "load_split", "read_meta", "val_batches",
    "Tokenizer", "load_tokenizer", "read_documents",
]
