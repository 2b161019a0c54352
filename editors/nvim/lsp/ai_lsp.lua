-- Default config for `vim.lsp.enable('ai_lsp')` (Neovim >= 0.11 reads lsp/<name>.lua).
-- Override any field with `vim.lsp.config('ai_lsp', {...})` or `require('ai_lsp').setup({...})`.
local ai_lsp = require('ai_lsp')
return ai_lsp.lsp_config(ai_lsp.defaults)
