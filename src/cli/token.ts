/** `token`: prints the verification token this ringhook accepts (for `subscribe` and tests). */
import { localToken } from "./local.ts";
import * as rt from "../runtime.ts";

/** Prints the token, or explains why there is none. */
export async function tokenCommand(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    rt.print(
      "Usage: ringhook token\n\nPrints the first configured RINGHOOK_VERIFICATION_TOKEN, or the token\n" +
        "the server generated and keeps in its database. Exit 1 when there is none yet.",
    );
    return 0;
  }
  const token = await localToken();
  if (!token) {
    rt.printErr("no token yet: set RINGHOOK_VERIFICATION_TOKEN, or start the server once");
    return 1;
  }
  rt.print(token);
  return 0;
}
