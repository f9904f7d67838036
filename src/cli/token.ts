/** `token`: prints the verification token this ringhook accepts (for `subscribe` and tests). */
import { localToken } from "./local.ts";
import * as rt from "../runtime.ts";

/** Prints the token, or explains why there is none. */
export function tokenCommand(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    rt.print(
      "Usage: ringhook token\n\nPrints the first configured RINGHOOK_VERIFICATION_TOKEN, or the token\n" +
        "the server generated and keeps in its database. Exit 1 when there is none yet.",
    );
    return Promise.resolve(0);
  }
  const token = localToken();
  if (!token) {
    rt.printErr("no token yet: set RINGHOOK_VERIFICATION_TOKEN, or start the server once");
    return Promise.resolve(1);
  }
  rt.print(token);
  return Promise.resolve(0);
}
