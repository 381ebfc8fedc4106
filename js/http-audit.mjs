// Runs graphql-http's audit of the GraphQL-over-HTTP specification against a server.
//
//   node js/http-audit.mjs http://127.0.0.1:8000/graphql
//
// Prints one JSON line per audit: {"id", "name", "status": "ok" | "warn" | "error", "reason"}.
import { auditServer } from "graphql-http";

const url = process.argv[2];
if (!url) throw new Error("usage: node http-audit.mjs <graphql url>");

const results = await auditServer({ url });
for (const result of results) {
  const line = { id: result.id, name: result.name, status: result.status };
  if (result.status !== "ok") line.reason = result.reason;
  console.log(JSON.stringify(line));
}
