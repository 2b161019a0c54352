--- :checkhealth ai_lsp: Neovim version, the server command, the running client and its commands.
local M = {}

function M.check()
  local health = vim.health
  local ai_lsp = require('ai_lsp')

  health.start('ai_lsp: Neovim')
  if vim.fn.has('nvim-0.11') == 1 then
    health.ok('Neovim ' .. tostring(vim.version()))
  else
    health.error('Neovim >= 0.11 is required', { 'Upgrade Neovim (vim.lsp.config, client:exec_cmd).' })
  end

  health.start('ai_lsp: server command')
  local cmd = (vim.lsp.config[ai_lsp.name] or {}).cmd or ai_lsp.options.cmd
  if type(cmd) ~= 'table' then
    health.info('cmd is a function; not checked')
  elseif vim.fn.executable(cmd[1]) == 1 then
    health.ok(('`%s` found: %s'):format(table.concat(cmd, ' '), vim.fn.exepath(cmd[1])))
  else
    health.error(('`%s` is not executable'):format(cmd[1]), {
      'Install the server from a clone of ai-lsp-tune: `uv tool install .` (puts `ai-lsp` on PATH),',
      "or point to it: require('ai_lsp').setup({ cmd = { '/path/to/ai-lsp', 'serve' } })",
    })
  end

  health.start('ai_lsp: running server')
  local clients = vim.lsp.get_clients({ name = ai_lsp.name })
  if #clients == 0 then
    health.warn('no ai_lsp client is running', {
      "Open a file of a configured filetype, after require('ai_lsp').setup() or vim.lsp.enable('ai_lsp').",
      'See :checkhealth vim.lsp and the log it names (vim.lsp.log.get_filename()) for start-up errors.',
    })
    return
  end
  for _, client in ipairs(clients) do
    health.ok(('client %d, root %s'):format(client.id, client.root_dir or '(none)'))
    local missing = {}
    for _, id in pairs(ai_lsp.commands) do
      if not ai_lsp.supports(client, id) then
        table.insert(missing, id)
      end
    end
    table.sort(missing)
    if #missing == 0 then
      health.ok('the server offers every ai-lsp command')
    else
      health.warn('the server does not offer: ' .. table.concat(missing, ', '), {
        'Update the server (`uv tool upgrade ai-lsp-tune`); the commands of this plugin need it.',
      })
    end
    -- The settings in effect: those sent since start-up (update_settings), else the initial ones.
    local settings = (client.settings or {}).aiLsp or client.config.init_options or {}
    health.info('settings: ' .. vim.json.encode(settings))
    local answer = client:request_sync('workspace/executeCommand',
      { command = ai_lsp.commands.status, arguments = {} }, 3000, 0)
    local status = answer and answer.result
    if type(status) ~= 'table' then
      health.warn('the server did not answer ai-lsp.finetune.status', {
        'It may still be starting; run :checkhealth ai_lsp again.',
      })
    else
      health.info('backend in effect: ' .. tostring(status.backend))
      local served = status.servedModel
      local configured = status.configuredModel
      local function same(a, b) -- `~/m.gguf` in the settings is the file the server names
        local full = function(p) return vim.fn.fnamemodify(vim.fn.expand(p), ':p'):gsub('/$', '') end
        return type(a) == 'string' and type(b) == 'string' and (a == b or full(a) == full(b))
      end
      if type(served) == 'string' then
        local gguf = served:lower():find('%.gguf$') ~= nil
        if not same(served, configured) then
          health.info(('serving %s (a fine-tune; the model setting is %s)'):format(served,
            tostring(configured)))
        elseif gguf then
          health.ok(('serving %s (the GGUF file you gave, converted once to MLX and cached)'):format(
            served))
        else
          health.ok('serving ' .. served)
        end
        if type(status.servedModelNote) == 'string' then
          health.warn(status.servedModelNote)
        end
      else
        health.info('no local model serving')
      end
      local bytes = status.traceFileBytes
      health.info(('trace file: %s (%s)'):format(tostring(status.traceFile),
        type(bytes) == 'number' and (bytes .. ' bytes') or 'not written yet'))
      if type(status.blas) == 'string' and status.blas:find('^reference') and status.blas:find(':') then
        health.warn('BLAS: ' .. status.blas, { 'Local models compute slowly on the reference BLAS.' })
      elseif type(status.blas) == 'string' then
        health.info('BLAS: ' .. status.blas)
      end
      if type(status.message) == 'string' then
        health.info(status.message)
      end
      local unplaced = type(status.issuesNotInCode) == 'table' and status.issuesNotInCode or {}
      for name, count in pairs(unplaced) do
        health.warn(('%s: %d issue(s) of the last answer not shown: the snippet is not in the code')
          :format(name, count), { 'The model quoted code that is not there; see the LSP log.' })
      end
    end
  end
end

return M
