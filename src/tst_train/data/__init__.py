"""Data for the reference trainer: `tst prepare` (documents -> tokenizer + sharded token files with a
document index) and the loaders that read a prepared data folder.

    from tst_train.data.prepare import prepare            # the API behind `tst prepare`
    from tst_train.data import load_tokenizer, check_data_dir, TokenLoader, val_batches

Modules: ``sources`` (input readers), ``tokenizer``, ``plan`` / ``shards`` / ``prepare`` (the
preparation stages), ``layout`` (the data folder format, `TokenStream`), ``loader`` (`TokenLoader`,
`val_batches`). (`tst_train.data.prepare` is the submodule; the function is `tst_train.data.prepare.prepare`.)
"""
from tst_train.data.layout import TokenStream, check_data_dir, load_split, read_meta
from tst_train.data.loader import TokenLoader, ValBatches, check_vocab, val_batches
from tst_train.data.sources import read_documents
from tst_train.data.tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "TokenLoader", "TokenStream", "ValBatches", "check_data_dir", "check_vocab", "load_split", "read_meta",
    "val_batches", "Tokenizer", "load_tokenizer", "read_documents",
]
