# Switchyard: build the TypeScript once, ship dist/ with production deps only.
# Node 22; runs as the unprivileged `node` user. README, "Running in production".
FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --no-audit --no-fund
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:22-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The dashboard's page files: dist/admin/ui.js reads them from here at startup.
COPY --from=build /app/src/admin/ui ./src/admin/ui
COPY config ./config
# The example config keeps its state (state.json, events.jsonl) here.
RUN mkdir -p /app/data && chown node:node /app/data
USER node
# 8080: traffic. 9901: admin API (the example binds it to loopback; set
# admin.listen to 0.0.0.0:9901 and SWITCHYARD_ADMIN_TOKEN to expose it).
EXPOSE 8080 9901
VOLUME ["/app/data"]
# docker stop: SIGTERM to the primary (PID 1 here; it handles the signal
# itself), which drains for up to the longest drain.timeout: give the
# container a stop timeout longer than that (docker stop -t, stop_grace_period).
STOPSIGNAL SIGTERM
# Liveness from inside the container, on the admin listener's /healthz (no
# token needed). Change the port here if your config moves admin.listen.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9901/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["serve", "--config", "config/switchyard.yaml"]
