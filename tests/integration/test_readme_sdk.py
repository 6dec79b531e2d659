"""The README's SDK example runs, as written, against a real dm and edge."""

from __future__ import annotations

import re
import textwrap
from typing import Any

from dm.client import DmClient
from loadtests.load.seed import video_bytes

from ..support.paths import REPO_ROOT
from ..support.sealed import edge_url
from ..support.services import DmStack

README = REPO_ROOT / "README.md"


def sdk_example() -> str:
    text = README.read_text()
    section = text[text.index("The SDK, in short") :]
    block = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert block is not None, "no python block in the README's SDK section"
    return block.group(1)


async def test_readme_sdk_example_runs(dm: DmStack) -> None:
    source = "async def example(DM, EDGE, video_bytes):\n" + textwrap.indent(
        sdk_example() + "return locals()\n", "    "
    )
    namespace: dict[str, Any] = {"DmClient": DmClient}
    exec(compile(source, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    data = video_bytes(200_000)
    done = await namespace["example"](dm.dm_url, edge_url(dm), data)
    assert done["event"]["message"]["id"] == done["sent"]["id"]
    assert done["part"].status == 206 and done["part"].body == data[:65536]
