import { createHash } from 'node:crypto';
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache } from '@apollo/client';
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { getMainDefinition, relayStylePagination } from '@apollo/client/utilities';
import { Client as UrqlClient, fetchExchange, subscriptionExchange } from '@urql/core';
import { cacheExchange } from '@urql/exchange-graphcache';
import { relayPagination } from '@urql/exchange-graphcache/extras';
import { persistedExchange } from '@urql/exchange-persisted';
import { OperationTypeNode, print, type DocumentNode } from 'graphql';
import type { Client as WsClient } from 'graphql-ws';
import { persistedHash } from '../../src/sdk/index.js';

/** How an app reaches the API: HTTP for queries and mutations, a graphql-ws client for subscriptions. */
export interface AppTransport {
  /** http://…/graphql */
  httpUrl: string;
  ws: WsClient;
  token: string | null;
  /** Send the SDK's trusted-document hashes (persisted query link / exchange). */
  persisted?: boolean;
}

const authHeaders = (token: string | null): Record<string, string> => (token ? { authorization: `Bearer ${token}` } : {});

/** The SDK document's hash, or (a document from elsewhere) the sha256 of its text, as the links compute it. */
const hashOf = (document: DocumentNode) => persistedHash(document) ?? createHash('sha256').update(print(document)).digest('hex');

/**
 * Apollo Client as an app sets it up: `HttpLink` and `GraphQLWsLink` split by operation type,
 * `relayStylePagination` on `Query.messages` (one list per room), and with `persisted` the
 * persisted query link sending the SDK's hashes.
 */
export function apolloApp({ httpUrl, ws, token, persisted = false }: AppTransport): ApolloClient {
  const transport = ApolloLink.split(
    ({ query }) => {
      const definition = getMainDefinition(query);
      return definition.kind === 'OperationDefinition' && definition.operation === OperationTypeNode.SUBSCRIPTION;
    },
    new GraphQLWsLink(ws),
    new HttpLink({ uri: httpUrl, headers: authHeaders(token) }),
  );
  return new ApolloClient({
    link: persisted ? ApolloLink.from([new PersistedQueryLink({ generateHash: hashOf }), transport]) : transport,
    cache: new InMemoryCache({
      typePolicies: { Query: { fields: { messages: relayStylePagination(['roomId']) } } },
    }),
  });
}

/**
 * urql as an app sets it up: graphcache with `relayPagination` on `Query.messages`, HTTP, and
 * `subscriptionExchange` over graphql-ws; with `persisted`, `persistedExchange` sending the SDK's
 * hashes for every kind of operation.
 */
export function urqlApp({ httpUrl, ws, token, persisted = false }: AppTransport): UrqlClient {
  return new UrqlClient({
    url: httpUrl,
    preferGetMethod: false,
    fetchOptions: () => ({ headers: authHeaders(token) }),
    exchanges: [
      cacheExchange({
        // Connection wrappers have no id: embedded in their parent, not normalized.
        keys: { MessageConnection: () => null, MessageEdge: () => null, RoomConnection: () => null, RoomEdge: () => null, PageInfo: () => null, Presence: () => null },
        resolvers: { Query: { messages: relayPagination() } },
      }),
      ...(persisted
        ? [
            persistedExchange({
              enforcePersistedQueries: true,
              enableForMutation: true,
              enableForSubscriptions: true,
              generateHash: async (_query, document) => hashOf(document),
            }),
          ]
        : []),
      fetchExchange,
      subscriptionExchange({
        enableAllOperations: false,
        forwardSubscription(request) {
          const payload = { ...request, query: request.query ?? '' };
          return { subscribe: (sink) => ({ unsubscribe: ws.subscribe(payload, sink) }) };
        },
      }),
    ],
  });
}
