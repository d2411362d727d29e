// The archdsl extension: .arch files get the TextMate grammar, and a language client that starts
// `archdsl lsp` (the server does the rest: diagnostics, hover, completion, navigation, ...).
const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

async function activate(context) {
  const config = vscode.workspace.getConfiguration("archdsl");
  const [command, ...args] = config.get("server.command", ["archdsl", "lsp"]);
  const serverOptions = { command, args, transport: TransportKind.stdio };
  const clientOptions = {
    documentSelector: [
      { scheme: "file", language: "archdsl" },
      { scheme: "untitled", language: "archdsl" },
    ],
    initializationOptions: { inlayHints: config.get("inlayHints.enabled", true) },
    // imported files changed outside the editor (a git checkout): the server re-checks their users
    synchronize: { fileEvents: vscode.workspace.createFileSystemWatcher("**/*.arch") },
  };
  client = new LanguageClient("archdsl", "archdsl language server", serverOptions, clientOptions);
  try {
    await client.start();
  } catch (err) {
    vscode.window.showErrorMessage(
      `archdsl: could not start \`${[command, ...args].join(" ")}\` (${err.message}). ` +
        "Install archdsl (pip install archdsl) or set archdsl.server.command.");
  }
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
