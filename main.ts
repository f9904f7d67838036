/**
 * ringhook: a RingCentral webhook gateway. This is the command-line entry:
 * `serve` (the default), `simulate`, `token`; see `main.ts --help`.
 */
import { serveCommand } from "./src/serve.ts";
import { simulateCommand } from "./src/cli/simulate.ts";
import { tokenCommand } from "./src/cli/token.ts";
import * as rt from "./src/runtime.ts";

const HELP = `ringhook: a RingCentral webhook gateway

Usage: ringhook [command] [options]

Commands:
  serve        run the server (default)
  simulate     send RingCentral-shaped requests to a ringhook and check the answers
  token        print the verification token the server accepts

Run 'ringhook <command> --help' for a command's options.
Exit codes: 0 ok, 1 failure, 2 bad configuration or usage.`;

const COMMANDS: Record<string, (argv: string[]) => Promise<number | void>> = {
  serve: () => serveCommand(),
  simulate: simulateCommand,
  token: tokenCommand,
};

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === "--help" || first === "-h" || first === "help") {
    rt.print(HELP);
    return 0;
  }
  const name = first === undefined || first.startsWith("-") ? "serve" : first;
  const cmd = COMMANDS[name];
  if (!cmd) {
    rt.printErr(`unknown command: ${name}\n\n${HELP}`);
    return 2;
  }
  const code = await cmd(name === first ? rest : argv);
  return typeof code === "number" ? code : 0;
}

if (import.meta.main) rt.exit(await main(rt.args()));
