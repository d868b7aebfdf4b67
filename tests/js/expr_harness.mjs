// Runs lw-expr.js for tests/test_expr_js.py.
//
// Reads a JSON list of {"tree": typed tree, "env": environment} from stdin and writes a
// JSON list of {"value": result} or {"error": "EvaluationError" | "UnsupportedError" |
// another error's name, "message": text}, one per case, in order.
//
// With --lines it serves many batches from one process: each stdin line is such a list
// and each answer is one line, so a test module starts node once.
import { createInterface } from "node:readline";

import { EvaluationError, evaluate } from "../../platform/loomwork/web/static/lw-expr.js";

function run(cases) {
  return cases.map(({ tree, env }) => {
    try {
      return { value: evaluate(tree, env) };
    } catch (exc) {
      const name = exc instanceof EvaluationError ? "EvaluationError" : (exc && exc.name) || "Error";
      return { error: name, message: String(exc && exc.message) };
    }
  });
}

if (process.argv.includes("--lines")) {
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (line.trim()) process.stdout.write(`${JSON.stringify(run(JSON.parse(line)))}\n`);
  }
} else {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  process.stdout.write(JSON.stringify(run(JSON.parse(Buffer.concat(chunks).toString("utf8")))));
}
