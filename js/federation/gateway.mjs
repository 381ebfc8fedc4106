// A real federation gateway in front of snapgraph and a second subgraph, for the tests.
//
//   SNAPGRAPH_URL=http://127.0.0.1:8000/graphql node js/federation/gateway.mjs
//
// 1. fetches snapgraph's subgraph SDL with `_service { sdl }` (no credentials, as routers do);
// 2. starts the "vms" subgraph (VirtualMachine references Snapshot by id);
// 3. composes both with @apollo/composition and serves them through @apollo/gateway on
//    @apollo/server, forwarding the caller's Authorization and X-API-Key to each subgraph;
// 4. prints one line `READY <gateway url>` and serves until it is killed.
import { ApolloServer } from "@apollo/server";
import { ApolloServerPluginInlineTraceDisabled } from "@apollo/server/plugin/disabled";
import { startStandaloneServer } from "@apollo/server/standalone";
import { composeServices } from "@apollo/composition";
import { ApolloGateway, RemoteGraphQLDataSource } from "@apollo/gateway";
import { buildSubgraphSchema } from "@apollo/subgraph";
import { parse } from "graphql";

const snapgraphUrl = process.env.SNAPGRAPH_URL;
if (!snapgraphUrl) throw new Error("set SNAPGRAPH_URL");

const vmsTypeDefs = parse(`
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.3", import: ["@key"])

  type Query {
    virtualMachines: [VirtualMachine!]!
  }

  "A VM, owned by the vms team; its snapshots live in snapgraph."
  type VirtualMachine @key(fields: "id") {
    id: ID!
    name: String!
    snapshots: [Snapshot]!
  }

  type Snapshot @key(fields: "id", resolvable: false) {
    id: ID!
  }
`);

const MACHINES = [
  { id: "vm-alice-1", name: "alice dev box", snapshotIds: ["snap-alice-dev", "sys-ubuntu-24.04"] },
  // snap-bob-db belongs to bob: snapgraph must resolve it to null for anyone else.
  { id: "vm-shared", name: "shared runner", snapshotIds: ["snap-alice-failed", "snap-bob-db"] },
];

const vmsResolvers = {
  Query: { virtualMachines: () => MACHINES },
  VirtualMachine: {
    snapshots: (vm) => vm.snapshotIds.map((id) => ({ __typename: "Snapshot", id })),
  },
};

async function fetchSdl(url) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ query: "{ _service { sdl } }" }),
  });
  const body = await response.json();
  if (!body.data) throw new Error(`no SDL from ${url}: ${JSON.stringify(body)}`);
  return body.data._service.sdl;
}

const vms = new ApolloServer({
  schema: buildSubgraphSchema({ typeDefs: vmsTypeDefs, resolvers: vmsResolvers }),
  plugins: [ApolloServerPluginInlineTraceDisabled()],
});
const { url: vmsUrl } = await startStandaloneServer(vms, { listen: { port: 0, host: "127.0.0.1" } });

const composition = composeServices([
  { name: "snapgraph", typeDefs: parse(await fetchSdl(snapgraphUrl)), url: snapgraphUrl },
  { name: "vms", typeDefs: vmsTypeDefs, url: vmsUrl },
]);
if (composition.errors) {
  console.error(composition.errors.map(String).join("\n"));
  process.exit(1);
}

class ForwardCredentials extends RemoteGraphQLDataSource {
  willSendRequest({ request, context }) {
    for (const name of ["authorization", "x-api-key"]) {
      const value = context.headers?.[name];
      if (value) request.http.headers.set(name, value);
    }
  }
}

const gateway = new ApolloGateway({
  supergraphSdl: composition.supergraphSdl,
  buildService: ({ url }) => new ForwardCredentials({ url }),
});
const server = new ApolloServer({ gateway });
const { url } = await startStandaloneServer(server, {
  listen: { port: 0, host: "127.0.0.1" },
  context: async ({ req }) => ({ headers: req.headers }),
});
console.log(`READY ${url}`);
