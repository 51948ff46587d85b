"""sipcore.ids: identifiers from pooled CSPRNG bytes, each slice handed out once."""

from __future__ import annotations

import os
import re

from sipcore import ids

HEX16 = re.compile(r"[0-9a-f]{16}")


def test_tags_and_branches_have_their_shape() -> None:
    assert HEX16.fullmatch(ids.new_tag())
    branch = ids.new_branch()
    assert branch.startswith(ids.MAGIC_COOKIE) and HEX16.fullmatch(branch[7:])
    assert re.fullmatch(r"[0-9a-f]{32}@h\.example", ids.new_call_id("h.example"))
    assert re.fullmatch(r"[0-9a-f]{32}", ids.new_call_id())


def test_no_value_repeats_across_pool_refills() -> None:
    # 20,000 tags are 160,000 random bytes: dozens of 4 KiB refills, each boundary
    # crossed at a different offset (16-hex tags, 32-hex Call-IDs interleaved).
    seen = set()
    for n in range(20_000):
        value = ids.new_call_id() if n % 7 == 0 else ids.new_tag()
        assert value not in seen
        seen.add(value)
        assert len(value) in (16, 32)


def test_a_draw_larger_than_the_pool() -> None:
    value = ids.random_hex(10_000)
    assert len(value) == 20_000 and re.fullmatch(r"[0-9a-f]+", value)


def test_a_forked_child_does_not_reuse_the_parents_pool() -> None:
    ids.new_tag()  # the pool now holds bytes the child must not hand out again
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, "".join(ids.new_tag() for _ in range(64)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    parent = "".join(ids.new_tag() for _ in range(64))
    child_tags = {child[i : i + 16] for i in range(0, len(child), 16)}
    parent_tags = {parent[i : i + 16] for i in range(0, len(parent), 16)}
    assert len(child_tags) == 64 and not child_tags & parent_tags
