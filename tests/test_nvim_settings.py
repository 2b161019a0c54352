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
