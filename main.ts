/**
 * ringhook: a RingCentral webhook gateway. This is the command-line entry:
 * `serve` (the default), `simulate`, `token`; see `main.ts --help`.
 */
import { serveCommand } from "./src/serve.ts";
import { simulateCommand } from "./src/cli/simulate.ts";
import { tokenCommand } from "./src/cli/token.ts";
import { callsCommand, eventsCommand } from "./src/cli/read.ts";
import { doctorCommand } from "./src/cli/doctor.ts";
import { healthcheckCommand } from "./src/cli/healthcheck.ts";
import {
  subscribeCommand,
  subscriptionsCommand,
  unsubscribeCommand,
} from "./src/cli/subscription.ts";
import * as rt from "./src/runtime.ts";
import { VERSION } from "./src/app.ts";

const HELP = `ringhook: a RingCentral webhook gateway

Usage: ringhook [command] [options]      (no command: serve; --version: the version)

Commands:
  serve        run the server (default)
  simulate     send RingCentral-shaped requests to a ringhook and check the answers
  events       list received notifications
  calls        list call records (--active for calls in progress)
  doctor       check configuration, data directory, database, public URL, RingCentral
  subscribe    create or repair the RingCentral subscription (adopt, update, recreate)
  subscriptions  list this app's RingCentral subscriptions and mark ringhook's
  unsubscribe  delete ringhook's RingCentral subscription and clear the stored id
  token        print the verification token the server accepts
  healthcheck  exit 0 when this ringhook's /readyz answers 200 (systemd, Docker)

Run 'ringhook <command> --help' for a command's options.
Exit codes: 0 ok, 1 failure, 2 bad configuration or usage.`;

const SERVE_HELP = `Usage: ringhook serve

Runs the webhook server: POST /webhook, /healthz, /readyz, /metrics, and the admin API
under /api/v1/ (when RINGHOOK_ADMIN_TOKEN is set). Configured by environment variables
(RINGHOOK_PORT, RINGHOOK_VERIFICATION_TOKEN, RINGHOOK_DATA_DIR, ...: see the README).
SIGTERM/SIGINT drain in-flight requests and exit 0; SIGHUP reloads secrets.
Exit codes: 0 clean shutdown, 1 cannot start, 2 bad configuration.`;

const COMMANDS: Record<string, (argv: string[]) => Promise<number | void>> = {
  serve: (argv) => {
    if (argv.includes("--help") || argv.includes("-h")) {
      rt.print(SERVE_HELP);
      return Promise.resolve(0);
    }
    return serveCommand();
  },
  simulate: simulateCommand,
  token: tokenCommand,
  events: eventsCommand,
  calls: callsCommand,
  doctor: doctorCommand,
  healthcheck: healthcheckCommand,
  subscribe: subscribeCommand,
  subscriptions: subscriptionsCommand,
  unsubscribe: unsubscribeCommand,
};

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === "--help" || first === "-h" || first === "help") {
    rt.print(HELP);
    return 0;
  }
  if (first === "--version" || first === "-V" || first === "version") {
    rt.print(`ringhook ${VERSION}`);
    return 0;
  }
  // Only a bare invocation means `serve`: a mistyped flag must not start a server.
  const name = first ?? "serve";
  const cmd = COMMANDS[name];
  if (!cmd) {
    rt.printErr(`unknown command or option: ${name}\n\n${HELP}`);
    return 2;
  }
  const code = await cmd(rest);
  return typeof code === "number" ? code : 0;
}

if (import.meta.main) rt.exit(await main(rt.args()));
