"""Neovim with the server command missing: the first supported file says so, once, with the fix.

A real headless Neovim with the plugin (no server process at all: nothing to start).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers.editors import isolated_env, nvim_binary

pytestmark = pytest.mark.editor

PLUGIN = Path(__file__).parent.parent / "editors" / "nvim"

INIT = """
vim.opt.rtp:prepend(%(plugin)s)
local shown = {}
vim.notify = function(msg, level) table.insert(shown, { msg = msg, level = level }) end
%(enable)s
vim.api.nvim_create_autocmd('VimEnter', { callback = function()
  vim.cmd.edit(%(second)s)  -- a second supported file: no second message
  vim.cmd.edit(%(notes)s)   -- not a supported filetype
  vim.defer_fn(function()
    vim.fn.writefile({ vim.json.encode(shown) }, %(out)s)
    vim.cmd('qa!')
  end, 200)
end })
"""


@pytest.mark.parametrize(
    "enable",
    [
        "require('ai_lsp').setup({ cmd = { '/nonexistent/bin/ai-lsp', 'serve' } })",
        "vim.lsp.config('ai_lsp', { cmd = { '/nonexistent/bin/ai-lsp', 'serve' } })\n"
        "vim.lsp.enable('ai_lsp')",
    ],
    ids=["setup", "vim.lsp.enable"],
)
def test_a_missing_server_command_is_said_once_when_the_first_file_opens(
    tmp_path: Path, enable: str
) -> None:
    for name in ("a.py", "b.py", "notes.txt"):
        (tmp_path / name).write_text("x = 1\n")
    out = tmp_path / "shown.json"
    init = tmp_path / "init.lua"
    init.write_text(
        INIT
        % {
            "plugin": json.dumps(str(PLUGIN)),
            "enable": enable,
            "second": json.dumps(str(tmp_path / "b.py")),
            "notes": json.dumps(str(tmp_path / "notes.txt")),
            "out": json.dumps(str(out)),
        }
    )
    subprocess.run(
        [nvim_binary(), "--headless", "-u", str(init), str(tmp_path / "a.py")],
        env=isolated_env(tmp_path),
        cwd=tmp_path,
        timeout=60,
        check=True,
        capture_output=True,
    )
    shown = json.loads(out.read_text())
    assert [s["level"] for s in shown] == [4], shown  # vim.log.levels.ERROR, once
    message = shown[0]["msg"]
    assert "`/nonexistent/bin/ai-lsp` is not an executable command" in message
    assert "uv tool install ." in message and "setup({ cmd = {" in message


def test_nothing_is_said_when_the_server_is_not_enabled(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    out = tmp_path / "shown.json"
    init = tmp_path / "init.lua"
    init.write_text(
        INIT
        % {
            "plugin": json.dumps(str(PLUGIN)),
            "enable": "",
            "second": json.dumps(str(tmp_path / "a.py")),
            "notes": json.dumps(str(tmp_path / "a.py")),
            "out": json.dumps(str(out)),
        }
    )
    subprocess.run(
        [nvim_binary(), "--headless", "-u", str(init), str(tmp_path / "a.py")],
        env=isolated_env(tmp_path),
        cwd=tmp_path,
        timeout=60,
        check=True,
        capture_output=True,
    )
    assert json.loads(out.read_text()) == []


STATUSLINE = """
vim.opt.rtp:prepend(%(plugin)s)
local ai = require('ai_lsp')
vim.lsp.get_client_by_id = function() return { name = ai.name } end
local function progress(token, value)
  ai._on_progress({ data = { client_id = 1, params = { token = token, value = value } } })
end
local seen = {}
-- Runs end (their last words stay a few seconds); the next starts and is cancelled at once.
for i = 1, 8 do
  local token = 'ai-lsp.finetune/2026113' .. i
  progress(token, { kind = 'begin', title = 'Fine-tune', message = '0%% · preparing' })
  progress(token, { kind = 'end', message = '100%% · now serving the fine-tuned model' })
end
local last = 'ai-lsp.finetune/20261199'
progress(last, { kind = 'begin', title = 'Fine-tune', message = '0%% · preparing', percentage = 0,
  aiLsp = { phase = 'preparing', percent = 0, message = '0%% · preparing' } })
table.insert(seen, ai.statusline())
-- The server's fields, not its message (here worded otherwise), make the statusline.
progress(last, { kind = 'report', message = '42%% · step two of three', percentage = 42,
  aiLsp = { phase = 'training', percent = 42, step = 2, totalSteps = 3, loss = 0.8412,
            message = '42%% · step two of three' } })
table.insert(seen, ai.statusline())
progress(last, { kind = 'end', message = 'Fine-tune cancelled at 12%%; the next resumes' })
for _ = 1, 20 do table.insert(seen, ai.statusline()) end
vim.fn.writefile({ vim.json.encode(seen) }, %(out)s)
vim.cmd('qa!')
"""


def test_the_statusline_shows_the_run_that_ended_last(tmp_path: Path) -> None:
    """Runs that ended within the few seconds an end state stays: the last one is shown."""
    out = tmp_path / "seen.json"
    init = tmp_path / "init.lua"
    init.write_text(STATUSLINE % {"plugin": json.dumps(str(PLUGIN)), "out": json.dumps(str(out))})
    subprocess.run(
        [nvim_binary(), "--headless", "-u", str(init)],
        env=isolated_env(tmp_path),
        cwd=tmp_path,
        timeout=60,
        check=True,
        capture_output=True,
    )
    running, training, *ended = json.loads(out.read_text())
    # A statusline item: '%' is written '%%'.
    assert (running, training) == ("AI 0%% preparing", "AI 42%% training 2/3 · loss 0.84")
    assert all("Fine-tune cancelled at 12%" in line for line in ended), ended
