"""The SFU: forwards end-to-end encrypted media it cannot read (being built)."""
