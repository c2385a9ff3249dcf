"""Hypothesis strategies shared by the parser fuzz tests."""

from typing import Any

from hypothesis import strategies as st


def json_values(
    *,
    text_size: int = 8,
    key_size: int = 8,
    size: int = 3,
    integers: st.SearchStrategy[int] | None = None,
    allow_nan: bool = False,
) -> st.SearchStrategy[Any]:
    """Arbitrary JSON values (scalars, lists, objects) of the sizes a fuzz test wants."""
    return st.recursive(
        st.none()
        | st.booleans()
        | (integers if integers is not None else st.integers())
        | st.floats(allow_nan=allow_nan)
        | st.text(max_size=text_size),
        lambda inner: (
            st.lists(inner, max_size=size)
            | st.dictionaries(st.text(max_size=key_size), inner, max_size=size)
        ),
        max_leaves=12,
    )
