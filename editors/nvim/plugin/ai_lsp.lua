-- User commands and the progress listener; the server starts via setup() or vim.lsp.enable('ai_lsp').
if vim.g.loaded_ai_lsp then
  return
end
vim.g.loaded_ai_lsp = true

if vim.fn.has('nvim-0.11') == 0 then
  vim.notify('ai-lsp needs Neovim >= 0.11 (vim.lsp.config, client:exec_cmd)', vim.log.levels.ERROR)
  return
end

local function ai_lsp()
  return require('ai_lsp')
end

local command = vim.api.nvim_create_user_command

command('AiLspFinetune', function(args)
  ai_lsp().finetune(args.fargs)
end, {
  nargs = '*',
  complete = 'file',
  desc = 'AI LSP: Fine-tune on my traces (optional extra trace files)',
})
command('AiLspFinetuneCancel', function()
  ai_lsp().cancel()
end, { desc = 'AI LSP: Cancel fine-tune' })
command('AiLspRollback', function()
  ai_lsp().rollback()
end, { desc = 'AI LSP: Roll back model' })
command('AiLspExport', function(args)
  ai_lsp().export(args.fargs[1], args.fargs[2])
end, {
  nargs = '*',
  complete = 'file',
  desc = 'AI LSP: Export model for Ollama / llama.cpp ([model] [out.gguf]; default: the served one)',
})
command('AiLspUseAnyway', function()
  ai_lsp().use_anyway()
end, { desc = 'AI LSP: Serve the fine-tune the evaluation gate kept out (when it offers so)' })
command('AiLspStatus', function()
  ai_lsp().status()
end, { desc = 'AI LSP: Show fine-tune status' })
command('AiLspModels', function()
  ai_lsp().models()
end, { desc = 'AI LSP: Choose a model (base or a fine-tune) to serve' })
command('AiLspUseModel', function(args)
  ai_lsp().use_model(args.args)
end, { nargs = 1, complete = 'dir', desc = 'AI LSP: Serve a fused model folder' })

command('AiLspMessages', function()
  vim.api.nvim_echo(vim.tbl_map(function(m) return { m .. '\n' } end, ai_lsp().history), false, {})
end, { desc = 'AI LSP: Show the whole text of the messages shown so far' })

vim.api.nvim_create_autocmd('FileType', {
  group = vim.api.nvim_create_augroup('ai_lsp_server_command', { clear = true }),
  desc = 'ai-lsp: say once when the server command is missing',
  callback = function(ev)
    ai_lsp().check_server_command(ev.buf)
  end,
})

vim.api.nvim_create_autocmd('BufWritePost', {
  group = vim.api.nvim_create_augroup('ai_lsp_analysis', { clear = true }),
  desc = 'ai-lsp statusline: a saved buffer is analysed again',
  callback = function(ev)
    ai_lsp()._on_save(ev.buf)
  end,
})

vim.api.nvim_create_autocmd('LspProgress', {
  group = vim.api.nvim_create_augroup('ai_lsp_progress', { clear = true }),
  desc = 'ai-lsp statusline progress',
  callback = function(ev)
    ai_lsp()._on_progress(ev)
  end,
})
