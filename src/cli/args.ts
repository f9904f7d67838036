/** Command-line parsing shared by the commands: `--help`, and usage errors with exit code 2. */
import { parseArgs } from "node:util";
import * as rt from "../runtime.ts";

type Options = NonNullable<Parameters<typeof parseArgs>[0]>["options"];
type Values<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O }>>[
  "values"
];

/** Parses argv; prints the help (returns 0) or a usage error (returns 2) instead of values. */
export function parseCommand<O extends Options>(
  argv: string[],
  options: O,
  help: string,
): Values<O> | number {
  let values;
  try {
    values = parseArgs({
      args: argv,
      options: { ...options, help: { type: "boolean", short: "h" } } as O,
    }).values as Values<O>;
  } catch (e) {
    rt.printErr(`${(e as Error).message}\n\n${help}`);
    return 2;
  }
  if ((values as Record<string, unknown>).help) {
    rt.print(help);
    return 0;
  }
  return values;
}
