// A client generated from tasktape's /openapi.json (openapi-typescript's
// types, openapi-fetch's calls), used as a TypeScript user would: submit,
// poll to succeeded, read the events page and the result, cancel a long
// task, list by status, bulk cancel, and with and without the token.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type Event = components["schemas"]["Event"];

const base = process.env.TASKTAPE_URL;
const token = process.env.TASKTAPE_TOKEN;
if (!base || !token) throw new Error("TASKTAPE_URL and TASKTAPE_TOKEN are needed");

const client = createClient<paths>({ baseUrl: base, headers: { Authorization: `Bearer ${token}` } });
const anonymous = createClient<paths>({ baseUrl: base });

function check(condition: boolean, what: string): asserts condition {
  if (!condition) throw new Error(`failed: ${what}`);
}

async function until<T>(what: string, read: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const value = await read();
    if (value !== undefined) return value;
    check(Date.now() < deadline, what);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// The probes need no token; everything else does.
const health = await anonymous.GET("/v1/healthz");
check(health.data?.status === "ok", "healthz without a token");
const refused = await anonymous.GET("/v1/tasks", { params: { query: {} } });
check(refused.response.status === 401 && refused.error?.error.code === "unauthorized", "401 without a token");

// Submit (an op's params are any object), poll to succeeded.
const submitted = await client.POST("/v1/{op}", { params: { path: { op: "echo" } }, body: { count: 3 } });
check(submitted.data !== undefined, "submit");
const taskId = submitted.data.task_id;
const row = await until("succeeded", async () => {
  const { data } = await client.GET("/v1/tasks/{task_id}", { params: { path: { task_id: taskId } } });
  return data?.status === "succeeded" ? data : undefined;
});
check(row.op === "echo", "the row");

// The events page: typed events, narrowed by their type.
const page = await client.GET("/v1/tasks/{task_id}/events", { params: { path: { task_id: taskId }, query: { from_seq: 0 } } });
check(page.data !== undefined, "events page");
const events: Event[] = page.data.events;
const progress = events.filter((event) => event.type === "progress");
check(progress.length === 3, "three progress events");
for (const event of events) {
  if (event.type === "progress") check(event.current <= event.total, "progress fields typed");
}
const last = events[events.length - 1];
check(last !== undefined && last.type === "final" && last.status === "succeeded", "final last");
const result = await client.GET("/v1/tasks/{task_id}/result", { params: { path: { task_id: taskId } } });
check(result.data?.status === "succeeded", "the result");

// A long task cancelled; a run_at with an offset; list by status.
const long = await client.POST("/v1/tasks", { body: { op: "echo", params: { count: 1000, delay_ms: 100 } } });
check(long.data !== undefined, "long submit");
const cancelled = await client.POST("/v1/tasks/{task_id}/cancel", { params: { path: { task_id: long.data.task_id } } });
check(cancelled.data?.cancelled === true, "cancel");
await until("cancelled", async () => {
  const { data } = await client.GET("/v1/tasks/{task_id}", { params: { path: { task_id: long.data.task_id } } });
  return data?.status === "cancelled" ? true : undefined;
});
const later = new Date(Date.now() + 3_600_000).toISOString().replace("Z", "+00:00");
const delayed = await client.POST("/v1/tasks", { body: { op: "echo", params: {}, run_at: later } });
check(delayed.data?.status === "pending", "a delayed submit with an offset");
const listed = await client.GET("/v1/tasks", { params: { query: { status: "cancelled", limit: 10 } } });
check(listed.data?.tasks.some((task) => task.task_id === long.data.task_id) === true, "list by status");

// Bulk cancel of the pending delayed task.
const bulk = await client.POST("/v1/tasks/cancel", { body: { ids: [delayed.data.task_id] } });
check(bulk.data?.cancelled === 1, "bulk cancel");
const info = await client.GET("/v1/info");
check(info.data?.engine === "tasktape" && info.data.auth_required, "info");
console.log("typescript client: ok");
