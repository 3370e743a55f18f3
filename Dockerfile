# Switchyard: build the TypeScript once, ship dist/ with production deps only.
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
COPY config ./config
RUN mkdir -p /app/data && chown node:node /app/data
USER node
# 8080: traffic. 9901: admin API (the example binds it to loopback; set
# admin.listen to 0.0.0.0:9901 and SWITCHYARD_ADMIN_TOKEN to expose it).
EXPOSE 8080 9901
VOLUME ["/app/data"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["serve", "--config", "config/switchyard.yaml"]
