"""The data: where each dataset's text comes from, the tokenizer, preparation into token files, and batches."""
