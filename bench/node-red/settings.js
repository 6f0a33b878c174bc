// Node-RED settings for the benchmark comparison (bench/run.sh sets the env).
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: parseInt(process.env.NR_PORT || "1880", 10),
    httpAdminRoot: false,          // no editor: the flow file is the whole program
    flowFile: process.env.NR_FLOWS,
    userDir: process.env.NR_USERDIR,
    credentialSecret: false,
    logging: { console: { level: "warn", metrics: false, audit: false } },
    telemetry: { enabled: false },
};
