"""Neovim set up with `vim.lsp.config` + `vim.lsp.enable` (no `setup()`): the settings reach the
server at start, so a restart keeps serving the workspace's fine-tune.

A real headless Neovim with the plugin, the real server and the tiny local model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ai_lsp_tune import paths
from ai_lsp_tune.serving.registry import REGISTRY_FILE
from tests.helpers.editors import isolated_env, nvim_binary, server_command

pytestmark = [pytest.mark.editor, pytest.mark.model, pytest.mark.slow]

PLUGIN = Path(__file__).parent.parent / "editors" / "nvim"

INIT = """
vim.opt.rtp:prepend(%(plugin)s)
vim.lsp.config('ai_lsp', { cmd = %(cmd)s, settings = %(settings)s })
vim.lsp.enable('ai_lsp')
local out, deadline = %(out)s, vim.uv.now() + 90000
local function poll()
  local ai = require('ai_lsp')
  local client = ai.client()
  if client and client.initialized then
    ai.exec(ai.commands.status, nil, function(status)
      if status.servedModel ~= nil and status.servedModel ~= vim.NIL or vim.uv.now() > deadline then
        vim.fn.writefile({ vim.json.encode(status) }, out)
        vim.cmd('qa!')
      else
        vim.defer_fn(poll, 500)
      end
    end)
  elseif vim.uv.now() > deadline then
    vim.cmd('qa!')
  else
    vim.defer_fn(poll, 500)
  end
end
vim.api.nvim_create_autocmd('VimEnter', { callback = function() vim.defer_fn(poll, 500) end })
"""


def lua_json(value: object) -> str:
    """A Lua expression for a JSON-ready value."""
    return f"vim.json.decode({json.dumps(json.dumps(value))})"


@pytest.mark.parametrize("section", [False, True], ids=["bare", "aiLsp"])
def test_settings_given_to_vim_lsp_config_keep_the_served_finetune(
    tmp_path: Path, tiny_model: Path, section: bool
) -> None:
    workspace = tmp_path / "project"
    (workspace / ".git").mkdir(parents=True)
    (workspace / "a.py").write_text("x = 1\n")
    # The workspace serves a fine-tune of the configured model (as after a swap).
    finetune = tmp_path / "runs" / "run-1" / "model"
    shutil.copytree(tiny_model, finetune)
    registry = paths.workspace_dir(workspace) / REGISTRY_FILE
    registry.parent.mkdir(parents=True)
    registry.write_text(
        json.dumps({"version": 2, "configured": str(tiny_model), "trail": [str(finetune)]})
    )
    settings = {"model": str(tiny_model), "telemetry": False}
    lua_settings = lua_json({"aiLsp": settings} if section else settings)
    out = tmp_path / "status.json"
    init = tmp_path / "init.lua"
    init.write_text(
        INIT
        % {
            "plugin": json.dumps(str(PLUGIN)),
            "cmd": lua_json(server_command()),
            "settings": lua_settings,
            "out": json.dumps(str(out)),
        }
    )
    subprocess.run(
        [nvim_binary(), "--headless", "-u", str(init), str(workspace / "a.py")],
        env=isolated_env(tmp_path),
        cwd=workspace,
        timeout=150,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    status = json.loads(out.read_text())
    assert status["configuredModel"] == str(tiny_model)
    assert status["servedModel"] == str(finetune), status
    assert json.loads(registry.read_text())["trail"][-1:] == [str(finetune)]


MESSAGES = """
vim.opt.rtp:prepend(%(plugin)s)
local ai = require('ai_lsp')
ai.setup({ cmd = %(cmd)s, settings = { model = %(model)s } })
local deadline = vim.uv.now() + 90000
local function poll()
  local said = vim.fn.execute('messages')
  if said:find('ai%%-lsp') or vim.uv.now() > deadline then
    vim.fn.writefile({ vim.json.encode({
      messages = said, history = ai.history, echospace = vim.v.echospace,
    }) }, %(out)s)
    vim.cmd('qa!')
  else
    vim.defer_fn(poll, 300)
  end
end
vim.api.nvim_create_autocmd('VimEnter', { callback = function() vim.defer_fn(poll, 300) end })
"""


def test_a_long_server_message_is_one_line_with_one_prefix_and_kept_whole(
    tmp_path: Path,
) -> None:
    """With Neovim's own vim.notify (no notification plugin), a message wider than the command
    line would leave a "Press ENTER" prompt: it is cut to one line that says where the whole
    text is (:AiLspMessages); it names the setting as a Neovim user writes it."""
    workspace = tmp_path / "project"
    (workspace / ".git").mkdir(parents=True)
    (workspace / "a.py").write_text("x = 1\n")
    missing_model = str(tmp_path / "no-such-model")
    out = tmp_path / "messages.json"
    init = tmp_path / "init.lua"
    init.write_text(
        MESSAGES
        % {
            "plugin": json.dumps(str(PLUGIN)),
            "cmd": lua_json(server_command()),
            "model": json.dumps(missing_model),
            "out": json.dumps(str(out)),
        }
    )
    subprocess.run(
        [nvim_binary(), "--headless", "-u", str(init), str(workspace / "a.py")],
        env=isolated_env(tmp_path, HF_HUB_OFFLINE="1"),
        cwd=workspace,
        timeout=150,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    seen = json.loads(out.read_text())
    lines = [line for line in seen["messages"].splitlines() if "ai-lsp" in line]
    assert lines, seen
    for line in lines:
        assert len(line) <= max(seen["echospace"], 40), (line, seen["echospace"])
        assert line.count("ai-lsp:") == 1 and "LSP[ai_lsp]" not in line, line
    (whole,) = [m for m in seen["history"] if "no-such-model" in m]
    assert whole.startswith('ai-lsp: set "settings.model"'), whole
    assert lines[0].endswith("… :AiLspMessages") or lines[0] == whole
